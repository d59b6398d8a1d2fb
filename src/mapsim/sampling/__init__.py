"""Samplers for MAP models: the reference raster sampler and the fast exact one."""
