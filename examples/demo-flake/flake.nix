{
  description = "homelab-deploy demo: three hosts whose system closures are tiny shell-built files, so they build offline without nixpkgs";

  # No inputs: nothing is fetched, the demo builds on any machine with Nix.
  outputs = { self }:
    let
      # Flakes evaluate purely and cannot ask for the current system; the
      # demo writes system.nix next to this file with the machine's system.
      system = if builtins.pathExists ./system.nix then import ./system.nix else "x86_64-linux";
      # A stand-in for a NixOS system closure: what the builder builds is
      # config.system.build.toplevel, here a derivation that writes one file.
      host = name: tier: {
        config.system.build.toplevel = derivation {
          inherit system;
          name = "nixos-system-${name}-demo";
          builder = "/bin/sh";
          args = [ "-c" "echo 'demo system for ${name} (tier ${tier}); not a real NixOS closure' > $out" ];
        };
      };
    in
    {
      nixosConfigurations = {
        testhost1 = host "testhost1" "test";
        dns1 = host "dns1" "prod";
        web1 = host "web1" "prod";
      };
    };
}
