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


# a character no SQL expression of coldtier's holds (ASCII unit separator)
_SEP = "\x1f"


def jseq_of_strings(spark: Any, items: list[str]) -> Any:
    """A Scala ``Seq[String]`` in three py4j calls, whatever its length: py4j converts a Python
    list one ``add`` call at a time, and a batch's column list is built anew for every batch."""
    if not items or any(not item or _SEP in item for item in items):
        raise ValueError("jseq_of_strings: one or more non-empty strings without \\x1f")
    parts = jclass(spark, "java.util.regex.Pattern").compile(_SEP).splitAsStream(_SEP.join(items)).toList()
    return jclass(spark, "org.apache.spark.api.python.PythonUtils").toSeq(parts)
