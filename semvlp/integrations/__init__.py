"""Integrations with other libraries' models; each subpackage imports its library lazily."""
