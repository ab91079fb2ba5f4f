#!/usr/bin/env bash
# Start Redis, RabbitMQ and PostgreSQL with the machine's own commands when they are not
# answering, then wait until each does (fail loudly if one never comes up).
set -u
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_redis() {
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_postgres() { pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start; }
start_rabbitmq() { rabbitmq-server -detached; }

status=0
for service in redis:6379 postgres:5432 rabbitmq:5672; do
  name=${service%%:*}; port=${service##*:}
  if ! answers "$port"; then
    echo "services: $name is not answering on $port; starting it"
    "start_$name" || echo "services: starting $name failed"
    for _ in $(seq 1 90); do answers "$port" && break; sleep 1; done
  fi
  if answers "$port"; then echo "services: $name up on $port"; else echo "services: $name DOWN on $port"; status=1; fi
done
exit $status
