"""Optional dependencies: which ``pip install 'kpcore[EXTRA]'`` brings which package.

``pip install kpcore`` installs what inference needs (onnxruntime, OpenCV,
Pillow, numpy, huggingface_hub, tqdm, pyarrow). Training, evaluation and
exporting need ``kpcore[train]`` (PyTorch and friends), the dashboard and demo
``kpcore[app]``, the cluster engine ``kpcore[ray]``; ``kpcore[all]`` is what
``requirements.txt`` installs. When one of those imports fails, the error says
which extra to install instead of a bare ``No module named 'torch'``.
"""

from __future__ import annotations

from .errors import KpcoreError

EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(("torch", "torchvision", "timm", "accelerate", "safetensors", "onnx", "pandas", "scipy",
                     "skimage", "yaml"), "train"),
    **dict.fromkeys(("streamlit", "gradio", "gradio_client", "plotly", "fastapi", "uvicorn", "starlette",
                     "imageio_ffmpeg"), "app"),
    "ray": "ray",
}
"""Import name -> the extra that installs it (pandas and scipy are in ``app`` too)."""
PRETTY = {"torch": "PyTorch", "torchvision": "torchvision", "skimage": "scikit-image", "yaml": "PyYAML",
          "ray": "Ray (Ray Data)"}


class MissingExtraError(KpcoreError, ImportError):
    """A feature needs a package of an extra that is not installed; the message names the extra."""


def missing_extra_error(module: str, what: str) -> MissingExtraError:
    """The error for ``what`` needing the import ``module``: names the package and the extra.

    >>> str(missing_extra_error("torch", "kpcore train"))
    "kpcore train needs PyTorch, which is not installed: pip install 'kpcore[train]'"
    """
    root = module.split(".")[0]
    extra = EXTRA_OF.get(root, "all")
    return MissingExtraError(f"{what} needs {PRETTY.get(root, root)}, which is not installed: "
                             f"pip install 'kpcore[{extra}]'")


def explain_import_error(err: ImportError, what: str) -> MissingExtraError | None:
    """:func:`missing_extra_error` for a failed import of an extra's package, else None
    (an import error of anything else is a real bug and should surface as it is)."""
    name = getattr(err, "name", None) or ""
    if isinstance(err, MissingExtraError):
        return err
    if not isinstance(err, ModuleNotFoundError) or name.split(".")[0] not in EXTRA_OF:
        return None
    return missing_extra_error(name, what)
