"""The service fixtures (tiny checkpoint, settings, both stores): the replay runs against them."""

from tests.service.conftest import checkpoint_dir, make_settings, store_url

__all__ = ["checkpoint_dir", "make_settings", "store_url"]
