"""An Autobahn-testsuite-style conformance harness for WebSocket clients.

A fuzzing server (``_fuzzing_server``) plays the client test cases of groups 1 to 10 of the
Autobahn testsuite (``_cases``) against an echo client (``_clients``) and classifies each run the
way the testsuite does. ``test_client_conformance`` runs it under pytest; ``python -m
tests.conformance`` prints a full report.
"""
