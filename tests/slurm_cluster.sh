#!/bin/bash
# A real single-node SLURM cluster on this machine, for the tests of the SLURM path (tests/test_slurm.py)
# and for trying the README's SLURM commands: Debian's slurmctld, slurmd and munge, started as root
# without systemd or cgroups, no accounting database (sacct does not work: the profile polls squeue).
#   bash tests/slurm_cluster.sh start   # install the packages where missing (apt), write the config, start
#   bash tests/slurm_cluster.sh stop    # stop the daemons this script started, remove the config it wrote
#   bash tests/slurm_cluster.sh status  # exit 0 when the node takes jobs
# Idempotent: `start` on a running cluster of this script's does nothing; it refuses to touch a machine
# whose /etc/slurm/slurm.conf it did not write (a real cluster). Two partitions share the node: `cpu`
# (the default) and `gpu`, whose one GPU is a stand-in (/dev/null) so that GPU requests are scheduled
# as on a real cluster; a job that gets it finds no CUDA device and runs on the CPU.
set -euo pipefail
ACTION=${1:-start}
STATE=${DIFFZOO_SLURM_STATE:-/var/tmp/diffzoo-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by diffzoo tests/slurm_cluster.sh"

ours() { [ -f "$CONF" ] && head -1 "$CONF" | grep -qF "$MARK"; }
up() { sinfo -h -o %t 2>/dev/null | grep -q . && ! sinfo -h -o %t 2>/dev/null | grep -qE '\*|down|drain|inval|unk'; }

stop_daemons() {
    for d in slurmd slurmctld; do
        if [ -f "$STATE/$d.pid" ]; then
            pid=$(cat "$STATE/$d.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$STATE/$d.pid"
        fi
    done
}

case "$ACTION" in
status)
    up
    ;;
stop)
    if ! ours; then echo "slurm_cluster: $CONF is not this script's: nothing stopped"; exit 0; fi
    command -v scancel >/dev/null && scancel --user "$(id -un)" 2>/dev/null || true
    stop_daemons
    if [ -f "$STATE/munged.pid" ]; then kill "$(cat "$STATE/munged.pid")" 2>/dev/null || true; rm -f "$STATE/munged.pid"; fi
    rm -f "$CONF" /etc/slurm/gres.conf
    echo "slurm_cluster: stopped"
    ;;
start)
    if [ "$(id -u)" != 0 ]; then echo "slurm_cluster: needs root (it installs packages and starts daemons)" >&2; exit 2; fi
    if [ -f "$CONF" ] && ! ours; then
        echo "slurm_cluster: $CONF exists and is not this script's: refusing to touch a real cluster" >&2; exit 2
    fi
    if ours && up; then echo "slurm_cluster: already up"; exit 0; fi
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
        command -v apt-get >/dev/null || { echo "slurm_cluster: no slurmctld/slurmd/munge and no apt-get" >&2; exit 2; }
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; }
    fi
    mkdir -p "$STATE"/{ctld,spool,log} /run/munge /etc/slurm
    # munge: the key the package made, the socket directory owned by munge, the daemon as munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- munged --force
        pgrep -u munge -x munged > "$STATE/munged.pid"
    fi
    node=$(hostname -s)
    read -r cpus mem < <(slurmd -C | awk '{for(i=1;i<=NF;i++){split($i,a,"="); v[a[1]]=a[2]}} END{print v["CPUs"], v["RealMemory"]}')
    mem=$((mem * 9 / 10))
    cat > "$CONF" <<EOF
$MARK
ClusterName=diffzoo-test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
SchedulerParameters=sched_interval=2
MessageTimeout=30
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=gpu Nodes=$node Default=NO MaxTime=INFINITE State=UP
EOF
    echo "$MARK
NodeName=$node Name=gpu File=/dev/null" > /etc/slurm/gres.conf
    stop_daemons
    slurmctld -i
    slurmd
    for _ in $(seq 150); do up && break; sleep 0.2; done
    if ! up; then
        echo "slurm_cluster: the node did not come up:" >&2; sinfo >&2 || true
        tail -5 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true; exit 1
    fi
    echo "slurm_cluster: up ($node, $cpus CPUs, ${mem} MB; partitions cpu (default) and gpu)"
    ;;
*)
    echo "usage: $0 start|stop|status" >&2; exit 2
    ;;
esac
