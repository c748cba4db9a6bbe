"""Drivers: how a node runs an instance.

A driver turns a launch request (argv, env, cwd, log dir) into a running instance and gives
back a small handle that survives a restart of the platform: the host agent stores the handle
in the catalog and, after a crash, *adopts* instances that are still running instead of
starting them again.

Data flow::

    agent --LaunchSpec--> driver.start() --ProcessHandle--> agent (stored: pid + start time)
    agent --ProcessHandle--> driver.wait() / stop() --exit status--> agent (events)
    child --stdout.log / stderr.log (files in the log dir)--> machines.logs.LogCollector

Drivers today: ``process`` (an instance is a child process in its own session; embedded
default). Later: ``container`` (runc + OCI bundles) and ``microvm`` (QEMU microvm).
"""
