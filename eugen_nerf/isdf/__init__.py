"""iSDF on EUGen layers: continual neural signed distance fields from posed depth streams."""
