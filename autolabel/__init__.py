"""autolabel: batch 68-point facial landmark labelling, review and finetuning.

    from autolabel import Labeler
    faces = Labeler().label(PIL.Image.open("photo.jpg"))   # list[Face]
"""

__version__ = "0.1.0"

from autolabel.types import (  # noqa: E402 - __version__ first: labelling reads it
    AutolabelError,
    Box,
    Face,
    FormatError,
    ImageError,
    ImageResult,
    ModelError,
    UsageError,
)

__all__ = ["Box", "Face", "ImageResult", "AutolabelError", "UsageError", "ImageError", "FormatError", "ModelError",
           "Labeler", "load_model", "__version__"]


def __getattr__(name: str):
    # Labeler and load_model bring torch (and dlib) with them: load those modules only when used
    if name == "Labeler":
        from autolabel.labelling import Labeler

        return Labeler
    if name == "load_model":
        from autolabel.model import load_model

        return load_model
    raise AttributeError(f"module 'autolabel' has no attribute {name!r}")
