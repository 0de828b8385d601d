"""The NeRF field with each MLP layer dense or EUGen, and the layer and size flags every method shares."""
