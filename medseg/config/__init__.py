"""medseg's one configuration object and its one loader.

* :mod:`medseg.config.schema`: :class:`~medseg.config.schema.RunConfig`, the schema: every section
  (plan, preprocess, model, loss, augment, train, infer, evaluate, report, synth ...) composed in
  one object;
* :mod:`medseg.config.loader`: the loader: defaults <- YAML file(s) <- ``--set section.key=value``;
* :mod:`medseg.config.section`: the base class each module's section derives from.
"""

from medseg.config.section import Section, yaml_switch

__all__ = ["Section", "yaml_switch"]
