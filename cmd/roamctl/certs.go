package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/cli"
	"github.com/roamfed/roamfed/regions"
)

// certsCmd creates the federation's CA and the regions' certificates.
func (a *app) certsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "certs",
		Short: "Create the federation CA and each region's certificate",
	}
	var out, regionList string
	var force bool
	initCmd := &cobra.Command{
		Use:   "init --out DIR [--regions ap,eu,us]",
		Short: "Create a federation CA and a certificate and key per region",
		Long: `init writes DIR/ca.pem and DIR/ca-key.pem (the federation CA) and, per
region, DIR/<region>.pem and DIR/<region>-key.pem, with the region's name in
the certificate (URI SAN roamfed://region/<name>) and its roaming host. The
regions come from --regions, else from the federation file. Give each region
its own certificate, its key, and ca.pem; keep ca-key.pem offline.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return cli.UsageError{Err: fmt.Errorf("certs init: --out DIR is required")}
			}
			fed, err := a.federation()
			if err != nil {
				return err
			}
			rs := fed.Regions
			if regionList != "" {
				rs = nil
				for _, name := range strings.Split(regionList, ",") {
					r, ok := fed.Region(strings.TrimSpace(name))
					if !ok {
						// A region not in the file: certificates for its
						// name alone, valid on loopback.
						r = regions.Region{Name: strings.TrimSpace(name), RoamingAddr: "127.0.0.1:0"}
					}
					rs = append(rs, r)
				}
			}
			if err := certs.InitWith(out, rs, certs.InitOptions{Force: force}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote the federation CA and certificates for %d regions to %s\n", len(rs), out)
			fmt.Fprintf(a.stdout, "start each region with: regiond --federation FILE --region NAME --certs %s\n", out)
			return nil
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "directory to write into")
	initCmd.Flags().StringVar(&regionList, "regions", "", "comma-separated region names (default: every region of the federation file)")
	initCmd.Flags().BoolVar(&force, "force", false, "replace existing files")
	c.AddCommand(initCmd)
	return c
}
