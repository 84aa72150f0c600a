"""Small measuring helpers shared by tests, benchmarks and the demo."""

from __future__ import annotations

import torch


class SavedTensorBytes:
    """Context manager that adds up the bytes autograd saves for backward inside it.

    Each saved tensor is counted once per save, by its storage size (``untyped_storage().nbytes()``
    of a view counts the whole storage it keeps alive), de-duplicated by storage pointer so a
    tensor saved twice is counted once.

    Example::

        with SavedTensorBytes() as saved:
            loss = layer(x).sum()
        print(saved.nbytes)
    """

    def __init__(self) -> None:
        self.nbytes = 0
        self._seen: set[tuple[int, int]] = set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ident = (storage.data_ptr(), storage.nbytes())
        if ident not in self._seen:
            self._seen.add(ident)
            self.nbytes += storage.nbytes()
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
