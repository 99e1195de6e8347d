# Both homelab-deploy services. Import this file (or the flake's
# nixosModules.default, which also sets the package) and enable
# services.homelab-deploy.listener and/or services.homelab-deploy.builder.
{
  imports = [
    ./listener.nix
    ./builder.nix
  ];
}
