// Package deploy holds what runs a region in production; it has no Go code
// of its own:
//
//	Dockerfile                 the image: static regiond and roamctl on distroless, nonroot
//	compose/compose.yaml       three regions on one Docker host, with compose/federation.yaml
//	systemd/regiond@.service   one region per unit instance, settings in /etc/roamfed/<region>.env
//	k8s/                       one region in Kubernetes: Namespace, StatefulSet, Services,
//	                           ConfigMap (federation file), Secret (admin token, certificates)
//
// Its test reads these files and checks them against regiond itself: every
// flag they pass exists (regiond --help of a fresh build), the ports agree
// between the image, the Services, the compose file and the federation
// files, and the data directory, federation file and admin token paths
// point at what is mounted there.
package deploy
