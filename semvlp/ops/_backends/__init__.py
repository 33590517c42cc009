"""Backend registrations. Importing this package registers every backend with `semvlp.ops.dispatch`."""

from . import reference, sdpa  # noqa: F401  (imported for their registration)
