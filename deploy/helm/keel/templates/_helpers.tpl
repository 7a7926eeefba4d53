{{/* Names and labels shared by every keel object. */}}
{{- define "keel.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "keel.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "keel.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The environment every keel container gets: KEEL_HOME, KEEL_CONFIG, env, secretEnv.
     HOME is the writable /tmp: the root filesystem is read-only. */}}
{{- define "keel.env" -}}
- name: KEEL_HOME
  value: /data
- name: KEEL_CONFIG
  value: /etc/keel/keel.yaml
- name: KEEL_SERVER__PORT
  value: {{ .Values.api.port | quote }}
- name: HOME
  value: /tmp
{{- if .Values.promptTemplates }}
- name: KEEL_PROMPTS__DIR
  value: /etc/keel/prompts
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
      optional: {{ .optional | default false }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts every keel container gets: the config, KEEL_HOME and a writable /tmp. */}}
{{- define "keel.volumes" -}}
- name: config
  configMap:
    name: {{ include "keel.fullname" . }}-config
    {{- with .Values.promptTemplates }}
    items:
      - {key: keel.yaml, path: keel.yaml}
      {{- range $name, $_ := . }}
      - {key: {{ printf "prompt.%s.j2" $name }}, path: {{ printf "prompts/%s.j2" $name }}}
      {{- end }}
    {{- end }}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "keel.fullname" .)) }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "keel.volumeMounts" -}}
- name: config
  mountPath: /etc/keel
  readOnly: true
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "keel.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "keel.volumes" . | nindent 2 }}
{{- end -}}
