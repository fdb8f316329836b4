"""autolabel: batch 68-point facial landmark labelling, review and finetuning.

    from autolabel import Labeler
    faces = Labeler().label(PIL.Image.open("photo.jpg"))   # list[Face]
"""

from autolabel.types import Box, Face, ImageResult, AutolabelError

__version__ = "0.1.0"

__all__ = ["Box", "Face", "ImageResult", "AutolabelError", "Labeler", "load_model", "__version__"]


def __getattr__(name):  # heavy modules (torch, dlib) load only when used
    if name == "Labeler":
        from autolabel.pipeline import Labeler

        return Labeler
    if name == "load_model":
        from autolabel.model import load_model

        return load_model
    raise AttributeError(name)
