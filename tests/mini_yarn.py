"""A MiniYARNCluster (Hadoop's in-process YARN: a ResourceManager and one NodeManager) for the
tests, started in a JVM driven over py4j:

    python tests/mini_yarn.py JARS_DIR WORK_DIR

writes WORK_DIR/conf/yarn-site.xml (point HADOOP_CONF_DIR at WORK_DIR/conf), then
WORK_DIR/ready, and runs until SIGTERM. Containers run on this machine, so they see the same
Python, jars and files as the test.
"""

from __future__ import annotations

import glob
import os
import signal
import sys
import threading
from pathlib import Path
from xml.sax.saxutils import escape

import pyspark
from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

OPENS = ("java.lang", "java.lang.reflect", "java.lang.invoke", "java.io", "java.net", "java.nio", "java.util",
         "java.util.concurrent", "sun.nio.ch", "sun.security.action")
SETTINGS = {
    "yarn.resourcemanager.scheduler.class":
        "org.apache.hadoop.yarn.server.resourcemanager.scheduler.fifo.FifoScheduler",
    "yarn.nodemanager.resource.memory-mb": "8192",
    "yarn.nodemanager.resource.cpu-vcores": "2",
    "yarn.scheduler.maximum-allocation-mb": "4096",
    "yarn.scheduler.minimum-allocation-mb": "256",
    "yarn.nodemanager.vmem-check-enabled": "false",
    "yarn.nodemanager.pmem-check-enabled": "false",
    "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": "99.9",
}


def main(jars_dir: str, work: str) -> int:
    os.chdir(work)  # the cluster keeps its state under ./target
    jars = glob.glob(f"{jars_dir}/*.jar")
    spark_jars = Path(pyspark.__file__).parent / "jars"
    jars += [str(p) for p in spark_jars.glob("log4j-*.jar")] + [str(p) for p in spark_jars.glob("slf4j-api-*.jar")]
    port = launch_gateway(classpath=":".join(jars), die_on_exit=True, javaopts=[
        "-Xmx1g", *(f"--add-opens=java.base/{m}=ALL-UNNAMED" for m in OPENS)],
        redirect_stdout=open("jvm.log", "a"), redirect_stderr=open("jvm.log", "a"))
    jvm = JavaGateway(gateway_parameters=GatewayParameters(port=port, auto_convert=True)).jvm
    conf = jvm.org.apache.hadoop.yarn.conf.YarnConfiguration()
    for k, v in SETTINGS.items():
        conf.set(k, v)
    cluster = jvm.org.apache.hadoop.yarn.server.MiniYARNCluster("coldtier", 1, 1, 1)
    cluster.init(conf)
    cluster.start()
    it = cluster.getConfig().iterator()
    Path("conf").mkdir(exist_ok=True)
    with open("conf/yarn-site.xml", "w") as fh:
        fh.write("<configuration>\n")
        while it.hasNext():
            e = it.next()
            key = e.getKey()
            if key.startswith(("yarn.", "fs.", "hadoop.")):
                fh.write(f"<property><name>{escape(key)}</name><value>{escape(e.getValue())}</value></property>\n")
        fh.write("</configuration>\n")
    Path("ready").write_text("1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
