"""scripts/kind-fleet: a fleet of kind clusters for fleetcheck's nightly CI.

Pure modules (unit-tested in tests/scripts/test_kind_fleet.py): :mod:`.plan` (names, subnets, kind
configs), :mod:`.routes` (flat L3 between node containers), :mod:`.dns` (peer zones),
:mod:`.kubeconfig` (merging kind's kubeconfigs). :mod:`.runner` runs kind, docker and
kubectl; :mod:`.cli` is the command line.
"""
