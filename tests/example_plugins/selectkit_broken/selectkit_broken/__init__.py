"""A plugin whose import fails, as a third-party plugin with a missing dependency would."""

import selectkit_dependency_that_does_not_exist  # noqa: F401
