"""Errors a user can cause, reported by the CLI as one sentence and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's config, files or data, explained in its message."""


def require_positive(name: str, value: float) -> None:
    """Reject a size, count or rate that is not > 0, naming the config key."""
    if not value > 0:  # also catches NaN
        raise UserError(f"{name} must be > 0, got {value!r}; set it to a positive value in the config.")



def require_seed(name: str, value: int) -> None:
    """A seed torch's generators take, with room for the per-epoch offsets added to it."""
    if not 0 <= value < 2**32:
        raise UserError(f"{name} must be between 0 and {2**32 - 1}, got {value}; pick another seed.")
