import sys

# The memory lever before .cli imports torch (scoring with --model runs the detector on this machine).
from runtime.allocator import enable_thp_allocation

enable_thp_allocation()

from .cli import main  # noqa: E402  (after the lever)

sys.exit(main())
