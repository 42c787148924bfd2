"""Old name of olive_fp16_pass.olive.import_hook, kept for installs made before the hook moved there.

An editable install (`pip install -e .`) copied the .pth file that imports this module into site-packages; it
stays until the package is reinstalled, and without this module Olive would no longer see our passes there.
Delete it once every such environment has been reinstalled (a fresh install never imports it).
"""

import olive_fp16_pass.olive.import_hook  # noqa: F401  (installs the hook)
