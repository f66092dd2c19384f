"""Errors of the fleet simulator, under the project's root error.

BikesenseError (bikesense.exceptions)
└── SimulatorError
    ├── SimulatorConfigError   an option is out of range or malformed (names the option)
    ├── PublishError           the MQTT broker could not be reached or did not acknowledge
    │   └── LoginRefusedError  the broker answered and refused the connection (its CONNACK)
    ├── KitRegistryError       a simulated kit is registered with another secret, or revoked
    └── FrameFileError         a frame file is not one of ours, or is truncated (names the offset)
"""

from bikesense.exceptions import BikesenseError


class SimulatorError(BikesenseError):
    """Base of the errors raised by :mod:`simulators`."""


class SimulatorConfigError(SimulatorError, ValueError):
    """An option is out of range or malformed; the message names the option."""


class PublishError(SimulatorError):
    """The broker could not be reached, refused us, or did not acknowledge in time."""


class LoginRefusedError(PublishError):
    """The broker refused the connection: no account for the login given, or none given."""


class KitRegistryError(SimulatorError):
    """The registry holds a simulated kit with another secret, or revoked (names the kit)."""


class FrameFileError(SimulatorError):
    """A frame file is not in our format or ends in the middle of a record."""
