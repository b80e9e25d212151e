"""Branch operations beyond :class:`lamina.Repo`'s own: renaming (repository.md §2 refs, moved by
compare-and-swap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina._errors import ConflictError, ExistsError, NotFoundError
from lamina.format.repository import check_ref_name, head_path, tag_path

if TYPE_CHECKING:
    from lamina.repo.repository import Repo

__all__ = ["rename_branch"]


def rename_branch(repo: Repo, old: str, new: str) -> str:
    """Rename branch ``old`` of ``repo`` to ``new`` (which must not exist as a branch or tag);
    returns the revision id it points at. ``new`` is created before ``old`` is removed, so the
    revision stays reachable throughout (a concurrent ``gc`` keeps it); if ``old`` moves
    meanwhile, ``new`` is removed again and this is a ConflictError."""
    repo._require()
    check_ref_name(new, "branch")
    current = repo._read_ref(head_path(check_ref_name(old, "branch")))
    if current is None:
        raise NotFoundError(f"{repo.location}: no branch {old!r}; branches: "
                            f"{', '.join(sorted(repo.branches())) or '(none)'}")
    if repo.store.exists(tag_path(new)):
        raise ExistsError(f"{repo.location}: {new!r} is a tag; a branch cannot share its name")
    value = f"{current}\n".encode()
    if not repo.store.compare_and_swap(head_path(new), None, value):
        raise ExistsError(f"{repo.location}: branch {new!r} exists; delete it first or choose another name")
    if not repo.store.compare_and_swap(head_path(old), value, None):
        repo.store.compare_and_swap(head_path(new), value, None)
        raise ConflictError(f"{repo.location}: branch {old!r} moved while it was being renamed; nothing changed, retry")
    return current
