"""Session-wide test settings.

The HF ``datasets`` cache points at a fresh temporary directory for the whole session
(set before ``datasets`` is imported, which reads it at import): tests load local copies
laid out like the hub's datasets, and ``datasets`` caches a local folder under the
folder's name (``imdb``, ``cifar10`` ...), so with the user's cache a later offline load
of the real dataset would silently return the tiny test copy.
"""

from __future__ import annotations

import os
import tempfile

os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="attnbench-test-hf-")
