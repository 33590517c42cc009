"""Backend registrations. Importing this package registers every backend with `semvlp.ops.dispatch`."""

from . import cuda, native, reference, sdpa, triton  # noqa: F401  (imported for their registration)
