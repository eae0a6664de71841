{{/* Object names: <namePrefix>-exporter etc., the deploy/kustomize names by default. */}}
{{- define "kepler-rs.exporter" -}}{{ .Values.namePrefix }}-exporter{{- end }}
{{- define "kepler-rs.collector" -}}{{ .Values.namePrefix }}-collector{{- end }}

{{/* Labels every object carries. */}}
{{- define "kepler-rs.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kepler-rs
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "kepler-rs.exporterSelector" -}}
app.kubernetes.io/name: {{ include "kepler-rs.exporter" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kepler-rs.collectorSelector" -}}
app.kubernetes.io/name: {{ include "kepler-rs.collector" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kepler-rs.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* "true" when the exporter DaemonSet runs in this mode. */}}
{{- define "kepler-rs.exporterOn" -}}
{{- if or (ne .Values.mode "hub") .Values.hub.localExporters }}true{{ end }}
{{- end }}

{{/* "true" when the cluster serves the Prometheus Operator's API (ServiceMonitor, PrometheusRule). */}}
{{- define "kepler-rs.monitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* The Secret holding a spoke's bearer token, and its key. */}}
{{- define "kepler-rs.spokeTokenSecret" -}}
{{- .Values.spoke.token.existingSecret | default (printf "%s-spoke-otlp" .Values.namePrefix) }}
{{- end }}
{{- define "kepler-rs.spokeTokenKey" -}}
{{- if .Values.spoke.token.existingSecret }}{{ .Values.spoke.token.key }}{{ else }}token{{ end }}
{{- end }}

{{/* The Secret holding the hub's per-spoke tokens (one key per cluster). */}}
{{- define "kepler-rs.hubTokenSecret" -}}
{{- .Values.hub.tokens.existingSecret | default (printf "%s-collector-tokens" .Values.namePrefix) }}
{{- end }}

{{/* The kepler-collector configuration (collector/README.md), as overlays/hub/config.yaml. */}}
{{- define "kepler-rs.collectorConfig" -}}
# kepler-collector configuration (collector/README.md), rendered by the kepler-rs chart: the
# four listeners of the Collector-based hub (4317/4318 for this cluster, 4327/4328 for spokes),
# with a bearer token per spoke cluster on the spoke listeners (and client certificate names
# with mutual TLS). A token or certificate is bound to its cluster name: the hub sets `cluster`
# from it, so one spoke cannot write as another.
listeners:
{{- range $name, $port := dict "hub-grpc" 4317 "hub-http" 4318 }}
  - name: {{ $name }}
    protocol: {{ trimPrefix "hub-" $name }}
    address: 0.0.0.0:{{ $port }}
    insert_cluster: {{ $.Values.hub.insertCluster }}
{{- end }}
{{- range $name, $port := dict "spokes-grpc" 4327 "spokes-http" 4328 }}
  - name: {{ $name }}
    protocol: {{ trimPrefix "spokes-" $name }}
    address: 0.0.0.0:{{ $port }}
    auth:
      tokens:
{{- range $.Values.hub.spokes }}
        - cluster: {{ . }}
          token_file: /etc/kepler-collector/tokens/{{ . }}
{{- end }}
{{- with $.Values.hub.certificates }}
      certificates:
{{- range . }}
        - cluster: {{ .cluster }}
{{- if .commonName }}
          common_name: {{ .commonName | quote }}
{{- else }}
          dns_name: {{ .dnsName | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if $.Values.hub.tls.secretName }}
    tls:
      cert_file: /etc/kepler-collector/tls/tls.crt
      key_file: /etc/kepler-collector/tls/tls.key
{{- if $.Values.hub.tls.clientCASecret }}
      client_ca_file: /etc/kepler-collector/client-ca/{{ $.Values.hub.tls.clientCAKey }}
{{- end }}
{{- end }}
{{- end }}
exposition:
  address: 0.0.0.0:9464
  metric_expiration: {{ .Values.hub.metricExpiration }}
{{- end }}
