# Stand-in NixOS configurations for the VM test's builder: each "toplevel" is
# a one-line derivation, so building them needs no nixpkgs and no network.
# The test writes ./system (the VM's platform) next to this file.
{
  description = "homelab-deploy VM test: configurations for the builder";

  outputs =
    { self }:
    let
      system = builtins.readFile ./system;
      host = name: {
        config.system.build.toplevel = derivation {
          name = "toplevel-${name}";
          inherit system;
          builder = "/bin/sh";
          args = [
            "-c"
            "echo ${name} > $out"
          ];
        };
      };
    in
    {
      nixosConfigurations = {
        web1 = host "web1";
        web2 = host "web2";
      };
    };
}
