"""The results library: list saved runs, import bundles, publish a static site."""
