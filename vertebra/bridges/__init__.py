"""Other libraries' models as vertebra backbones, and vertebra's backbones inside other libraries.

* ``timm:<model>`` (:mod:`.timm`) and ``torchvision:<model>`` (:mod:`.torchvision`): namespaces the
  built-in plugin registers, resolved on use, so any timm feature model or torchvision classifier
  sits under every vertebra head.
* :func:`vertebra.bridges.smp.register_encoders` (:mod:`.smp`): vertebra backbones as
  segmentation-models-pytorch encoders (``encoder_name="vertebra-efficientnet_b3"``).

See docs/bring-your-own-backbone.md.  Nothing here is imported by ``import vertebra``.
"""
