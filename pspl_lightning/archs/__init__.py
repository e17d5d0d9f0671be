"""SR networks: plain ``nn.Module`` classes built from configs through ``_target_``.

Networks whose upsampler depends on the scale list it in ``scale_dependent`` (state-dict key prefixes),
which :func:`pspl_lightning.inference.warm_start.load_matching_weights` skips across scales.
:func:`spandrel_net` builds spandrel's community architectures (SwinIR, HAT, ...; docs/ZOO.md).
"""

from pspl_lightning.archs.edsr import EDSR
from pspl_lightning.archs.rcan import RCAN
from pspl_lightning.archs.rdn import RDN
from pspl_lightning.archs.srcnn import SRCNN
from pspl_lightning.archs.srresnet import MSRResNet
from pspl_lightning.archs.tiny import TinySR
from pspl_lightning.archs.vdsr import VDSR
from pspl_lightning.archs.zoo import spandrel_net

__all__ = ["EDSR", "MSRResNet", "RCAN", "RDN", "SRCNN", "TinySR", "VDSR", "spandrel_net"]
