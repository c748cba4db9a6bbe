#!/bin/sh
# nginx as a Roost instance: `return 200 "ok"` on 127.0.0.1:$PORT, one process, pinned to
# the CPUs in $BENCH_CPUS (default: inherit). Used by bench/throughput.py's full path.
set -eu
dir="$PWD/run-${ROOST_INSTANCE_ID:-nginx}"
mkdir -p "$dir"
chmod 777 "$dir"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:${PORT} backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
CONF
if [ -n "${BENCH_CPUS:-}" ] && command -v taskset >/dev/null 2>&1; then
    exec taskset -c "$BENCH_CPUS" nginx -e "$dir/error.log" -c "$dir/nginx.conf"
fi
exec nginx -e "$dir/error.log" -c "$dir/nginx.conf"
