"""MAP models behind one interface (:class:`mapsim.models.base.MapModel`)."""
