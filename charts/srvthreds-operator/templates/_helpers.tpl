{{/* Names, labels and the RBAC rules shared by the chart's templates. */}}

{{- define "srvthreds-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "srvthreds-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "srvthreds-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "srvthreds-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "srvthreds-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "srvthreds-operator.labels" -}}
helm.sh/chart: {{ include "srvthreds-operator.chart" . }}
{{ include "srvthreds-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: srvthreds
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "srvthreds-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "srvthreds-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "srvthreds-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "srvthreds-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/*
Rules for the objects the operator manages inside the namespaces it watches. Keep them equal to
manifests/base/rbac.yaml (tests/delivery checks it): no wildcards, reads only where it only reads.
*/}}
{{- define "srvthreds-operator.namespacedRules" -}}
- apiGroups: [srvthreds.io]
  resources: [srvthredsclusters]
  verbs: [get, list, watch, patch, update]
- apiGroups: [srvthreds.io]
  resources: [srvthredsclusters/status]
  verbs: [get, patch, update]
- apiGroups: [srvthreds.io]
  resources: [srvthredsclusters/scale]
  verbs: [get]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services, configmaps, secrets, serviceaccounts]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims, pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, prometheusrules]
  verbs: [get, list, watch, create, patch, update, delete]
{{- end }}

{{/* Leader election: one Lease, read, created and renewed (or taken over) with update. Granted
only through a Role in the Lease's namespace, never cluster-wide: a ClusterRole with these rules
could rewrite every Lease in the cluster, kube-node-lease's node heartbeats included. */}}
{{- define "srvthreds-operator.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end }}

{{/* Cluster-scoped reads: optional CRDs (ServiceMonitor, PrometheusRule) and kopf's namespace scan. */}}
{{- define "srvthreds-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
