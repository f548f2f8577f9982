"""``type = "http"``: a generic JSON/HTTP sender, built on the plugin interface alone."""
