"""Errors a user can cause, reported by the CLI as one sentence and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's config, files or data, explained in its message."""


def require_positive(name: str, value: float) -> None:
    """Reject a size, count or rate that is not > 0, naming the config key."""
    if not value > 0:  # also catches NaN
        raise UserError(f"{name} must be > 0, got {value!r}; set it to a positive value in the config.")

