"""KFP v2 components: one @dsl.component per module, thin adapters over hhpulse."""
