import os

os.environ.setdefault("HARDOOD_QUIET", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
