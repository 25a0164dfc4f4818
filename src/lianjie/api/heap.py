"""The server's heap keeper: ``lianjie.heap.HeapKeeper``, started by each server process
(``create_app(..., keep_heap=True)``). It lives outside ``api`` so that any long-running process
embedding Lianjie can run the same policy."""

from lianjie.heap import FREEZE_EVERY_S, THAW_EVERY_S, HeapKeeper

__all__ = ["FREEZE_EVERY_S", "THAW_EVERY_S", "HeapKeeper"]
