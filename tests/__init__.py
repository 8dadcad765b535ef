"""sandstone's tests."""

import txaio

# Before any test module imports autobahn: autobahn.wamp.serializer binds txaio's clock at import time,
# so importing it (say, for JsonSerializer) ahead of sandstone would leave it without a framework.
txaio.use_twisted()
