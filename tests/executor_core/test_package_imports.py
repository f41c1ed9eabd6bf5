from __future__ import annotations

import subprocess
import sys

import executor_core


def test_importing_the_core_does_not_import_django():
    code = "import executor_core, sys; assert 'django' not in sys.modules, 'django imported'"

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr


def test_every_public_name_is_exported():
    missing = [name for name in executor_core.__all__ if not hasattr(executor_core, name)]

    assert missing == []
    assert executor_core.__version__
