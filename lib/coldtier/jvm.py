"""JVM classes from Python (py4j), found in one lookup each."""

from __future__ import annotations

from typing import Any


def jclass(spark: Any, name: str) -> Any:
    """A JVM class by its full name. py4j resolves ``jvm.a.b.C`` one segment at a time, asking
    the JVM whether ``a``, then ``a.b``, ... is a class, and each miss searches every jar on the
    class path; profiled, a fifth of the CPU of a many-table run went there (docs/tuning.md).
    This asks once, for the class itself."""
    from py4j.java_gateway import JavaClass

    return JavaClass(name, spark.sparkContext._gateway._gateway_client)
