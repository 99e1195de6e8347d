{
  description = "homelab-deploy: deploy and pre-build NixOS configurations over NATS";

  # nixos-unstable, locked in flake.lock to one commit and its narHash
  # (2026-06-29, Go 1.26 as its default go). Move it with
  # `nix flake update nixpkgs`, then rerun scripts/update-vendor-hash and the
  # tests; a consumer's `inputs.homelab-deploy.inputs.nixpkgs.follows`
  # replaces it.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      # The NixOS module and its VM test are Linux only; the CLI (deploy,
      # build, mcp, list-hosts) also runs on macOS.
      linuxSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      darwinSystems = [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      systems = linuxSystems ++ darwinSystems;
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      isLinux = pkgs: lib.elem pkgs.stdenv.hostPlatform.system linuxSystems;

      # Passed to the binary with -ldflags -X main.version=...
      version = "0.1.0+" + (self.shortRev or self.dirtyShortRev or "dirty");

      # Hash of the `go mod vendor` tree of go.mod/go.sum and the packages the
      # code imports. Update with scripts/update-vendor-hash; nixos/nix_test.go
      # fails when it is stale.
      vendorHash = "sha256-wRhHHY3mHKwJX4FOmibkLGbHrZWYb89n8SP/zmc68nc=";

      # go.mod's `go` line is a minimum, and buildGoModule sets
      # GOTOOLCHAIN=local, so the toolchain must be at least that version. Take
      # nixpkgs' default Go when it is new enough, else a versioned attribute;
      # fail with a clear message when nixpkgs has none.
      goRequired = builtins.head (builtins.match ".*\ngo ([0-9.]+)\n.*" (builtins.readFile ./go.mod));
      goFor =
        pkgs:
        let
          candidates = lib.filter (g: g != null) (
            map (name: pkgs.${name} or null) [
              "go"
              "go_1_26"
              "go_1_27"
            ]
          );
        in
        lib.findFirst (g: lib.versionAtLeast g.version goRequired) (throw ''
          homelab-deploy needs Go >= ${goRequired} (go.mod), but this nixpkgs offers Go ${pkgs.go.version}.
          Update the nixpkgs input (nix flake update nixpkgs).'') candidates;

      mkPackage =
        pkgs:
        (pkgs.buildGoModule.override { go = goFor pkgs; }) {
          pname = "homelab-deploy";
          inherit version vendorHash;
          # The whole repository: `go mod vendor` in the vendor derivation must
          # see the same packages as scripts/update-vendor-hash does.
          src = lib.cleanSource ./.;
          subPackages = [ "." ];
          ldflags = [
            "-s"
            "-w"
            "-X main.version=${version}"
          ];
          # The test suite needs a NATS server, Nix and git at run time, and
          # starts servers on loopback; it runs in CI (.ci/run), not in the
          # Nix sandbox. checks.vm-test exercises the built binary.
          doCheck = false;
          meta = {
            description = "Deploy and pre-build NixOS configurations through NATS messaging";
            license = lib.licenses.mit;
            mainProgram = "homelab-deploy";
            platforms = lib.platforms.linux ++ lib.platforms.darwin;
          };
        };

      # Wrap a module so that its package defaults to this flake's build
      # (mkDefault: a user's own `package = ...` wins). The key keeps the
      # wrapper from being applied twice when imported through several outputs.
      withPackage = service: file: {
        key = "homelab-deploy#nixosModules.${service}";
        imports = [
          file
          (
            { pkgs, ... }:
            {
              services.homelab-deploy.${service}.package =
                lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
            }
          )
        ];
      };
    in
    {
      packages = forAllSystems (pkgs: {
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.homelab-deploy;
        homelab-deploy = mkPackage pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          meta.description = "homelab-deploy CLI (listener, builder, mcp, deploy, build)";
        };
      });

      overlays.default = final: _prev: { homelab-deploy = mkPackage final; };

      nixosModules = {
        listener = withPackage "listener" ./nixos/listener.nix;
        builder = withPackage "builder" ./nixos/builder.nix;
        default = {
          imports = [
            self.nixosModules.listener
            self.nixosModules.builder
          ];
        };
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (goFor pkgs)
            pkgs.gopls
            pkgs.nats-server
            pkgs.natscli
            pkgs.git
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree or pkgs.nixfmt-rfc-style);

      checks = forAllSystems (
        pkgs:
        {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        }
        // lib.optionalAttrs (isLinux pkgs) {
          vm-test = pkgs.testers.runNixOSTest (import ./nixos/tests/vm-test.nix { inherit self; });
        }
      );
    };
}
