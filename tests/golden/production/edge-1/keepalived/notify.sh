#!/bin/sh
# Rendered by assistantctl for host edge-1; edit assistant.yaml instead.
# keepalived runs: /bin/sh notify.sh TYPE NAME STATE PRIORITY on every VRRP transition.
# One line per transition, in the engine's log line format (docs/architecture.md).
log=/srv/assistant/logs/keepalived-notify.log
case "$3" in
    FAULT|STOP) level=WARNING ;;
    *) level=INFO ;;
esac
now=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
printf '%s %s keepalived.notify type=%s instance=%s state=%s priority=%s\n' \
    "$now" "$level" "${1:--}" "${2:--}" "${3:--}" "${4:--}" >> "$log"
