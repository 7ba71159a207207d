"""The one progress display of simulator jobs (evaluation episodes, generated demonstrations): a tqdm
bar with the running success count, or a line on stderr per item without tqdm."""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """``total`` items to go; [`update`][flowvla.envs.progress.Progress.update] after each one."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        self.total, self.n, self.ok, self.enabled = total, 0, 0, enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="ep")
            except ImportError:
                self.desc = desc

    def update(self, success: bool) -> None:
        """One more item done (``success``: it counts toward the running success count)."""
        self.n += 1
        self.ok += bool(success)
        if self.bar is not None:
            self.bar.set_postfix(success=f"{self.ok}/{self.n}")
            self.bar.update(1)
        elif self.enabled:
            print(f"{self.desc}: {self.n}/{self.total} episodes, {self.ok} successes", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
