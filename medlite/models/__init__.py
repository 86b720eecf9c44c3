"""Model families of medlite; importing this package registers every model (see :mod:`medlite.registry`).

Each registered variant is a module-level function named after the model, e.g.
``medlite.models.medlit.medlit_nano_28`` or ``medlite.models.litesam.model.litesam_swin_xs``.
``mae`` (the MAE pretraining wrapper) is not a registered model.
"""

from medlite.models import baselines, efficientnet_lite, litesam, medlit, medlitenet

__all__ = ["baselines", "efficientnet_lite", "litesam", "medlit", "medlitenet"]
