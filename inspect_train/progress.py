"""Progress bars that show on a terminal and stay out of logs and pipes.

tqdm's `disable=None` turns the bar off when stderr is not a TTY, so error
output captured by scripts stays one clean line.
"""

from tqdm.auto import tqdm


def progress_bar(iterable=None, **kwargs):
    kwargs.setdefault("disable", None)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
