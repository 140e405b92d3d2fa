package cli

import (
	"runtime"

	"github.com/spf13/cobra"
)

// newApplyCmd is `surge apply -f surge.yaml`: surge deploy -f, for those
// who think of manifests as applied.
func newApplyCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := newDeployOptions(s, newClient, d)
	c := &cobra.Command{
		Use:   "apply -f surge.yaml [NAME]",
		Short: "Deploy every function a manifest lists (surge deploy -f)",
		Long: `Apply deploys the functions of a manifest, each as surge deploy would: built
or pushed first when its image comes from a folder or a tarball, then written,
then waited for. With NAME it deploys that function of the manifest only.
See surge deploy --help for the manifest's fields.`,
		Example: `  surge apply -f surge.yaml
  surge apply -f examples/surge.yaml echo`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Manifest == "" {
				return usagef("-f is required: surge apply -f surge.yaml")
			}
			o.Set = map[string]bool{}
			setFlags(cmd, o.Set)
			if len(args) == 1 {
				o.Name = args[0]
			}
			return runDeploy(cmd.Context(), o)
		},
	}
	c.Flags().StringVarP(&o.Manifest, "file", "f", "", "the manifest (surge.yaml)")
	c.Flags().StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the nodes, for builds")
	addWaitFlags(c, o)
	return c
}
