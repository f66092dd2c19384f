"""The fleet simulator: stand-in sensor kits on delivery bikes, with a known truth.

Layout, from the ground up:

- :mod:`simulators.town`: a procedurally generated street graph around a town
  centre, with arterial roads and depots;
- :mod:`simulators.rounds`: delivery rounds on that graph, as piecewise-linear
  trajectories with stops at addresses;
- :mod:`simulators.environment`: the ground-truth pollution and noise fields;
- :mod:`simulators.sensors`: what a kit measures of the truth (noise, bias,
  humidity, drift, GNSS error, warm-up);
- :mod:`simulators.faults`: the faults a run injects, and at what rates;
- :mod:`simulators.fleet`: kits, boots, frames: a deterministic stream of
  publications from a seed;
- :mod:`simulators.truth` and :mod:`simulators.truthflags`: the record of what
  was published and what was true;
- :mod:`simulators.encoding`: frames a block at a time through the protocol;
- :mod:`simulators.publisher` and :mod:`simulators.framefile`: where
  publications go (real MQTT at QoS 1, or a file for replay);
- :mod:`simulators.kitpublishers` and :mod:`simulators.registration`: the fleet
  as kits, each logged in as itself, and registered as real kits are;
- :mod:`simulators.runner` and :mod:`simulators.cli`: pacing and the command line.

See ``docs/simulator.md``.
"""
