# NixOS VM test: a NATS server with NKey users and the permissions of
# SPEC.md, two listeners (test tier; prod tier with role dns) and a builder.
# Run with `nix build .#checks.x86_64-linux.vm-test` (needs KVM).
#
# What is real: the module's units, users and firewall, the binary, NATS with
# authorization, discovery, deploy requests and responses, the builder's
# `nix build` through the VM's Nix daemon on a local git flake.
# What is not: nixos-rebuild. Switching a VM to a configuration needs that
# configuration's whole closure built beforehand; instead a stand-in placed
# first on the listener's PATH records its arguments and succeeds (when asked
# to, it also swaps the listener's unit file, the way a real switch would, to
# exercise the restart after a switch).
#
# The NKeys in ./keys are test-only keys generated for this file.
{ self }:
{ lib, ... }:
let
  natsPort = 4222;
  natsUrl = "nats://server:${toString natsPort}";
  pub = name: lib.removeSuffix "\n" (builtins.readFile (./keys + "/${name}.pub"));

  # The binary refuses seeds readable by group or others: install the test
  # seeds as copies (not store symlinks) with mode 0400 and the right owner.
  seeds =
    owner: names:
    lib.listToAttrs (
      map (name: {
        name = "homelab-deploy/${name}.seed";
        value = {
          source = ./keys + "/${name}.seed";
          mode = "0400";
          user = owner;
        };
      }) names
    );

  # Records how the listener ran it. With /run/simulate-unit-change present,
  # it also makes the listener's unit file read differently, as a switch to a
  # configuration with a new listener would.
  fakeRebuild =
    pkgs:
    pkgs.writeShellScriptBin "nixos-rebuild" ''
      echo "$*" >> /run/nixos-rebuild-calls
      if [ -e /run/simulate-unit-change ]; then
        rm /run/simulate-unit-change
        unit=$(readlink -f /etc/systemd/system/homelab-deploy-listener.service)
        { cat "$unit"; echo "# changed by the VM test"; } > /run/changed-unit
        ${pkgs.util-linux}/bin/mount --bind /run/changed-unit "$unit"
      fi
    '';

  listener =
    {
      tier,
      role ? null,
      seed,
    }:
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [ pkgs.curl ];
      environment.etc = seeds "root" [ seed ];
      services.homelab-deploy.listener = {
        enable = true;
        inherit tier role natsUrl;
        nkeyFile = "/etc/homelab-deploy/${seed}.seed";
        flakeUrl = "git+file:///srv/configs";
        metrics = {
          enable = true;
          openFirewall = true;
        };
      };
      systemd.services.homelab-deploy-listener.path = lib.mkBefore [ (fakeRebuild pkgs) ];
    };

  # What `homelab-deploy nats-config` grants: statuses only on the
  # listener's own reply subjects (deploy.responses.<id>.<hostname>).
  listenerPermissions = hostname: subscribe: {
    inherit subscribe;
    publish = [
      "deploy.responses.*.${hostname}"
      "deploy.discover"
    ];
  };
in
{
  name = "homelab-deploy";

  nodes = {
    server =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          self.packages.${pkgs.stdenv.hostPlatform.system}.default
          pkgs.curl
        ];
        environment.etc = seeds "root" [
          "deployer"
          "build-client"
        ];
        networking.firewall.allowedTCPPorts = [ natsPort ];
        services.nats = {
          enable = true;
          host = "0.0.0.0";
          port = natsPort;
          settings.authorization.users = [
            {
              nkey = pub "listener-test";
              permissions = listenerPermissions "testhost" [
                "deploy.test.testhost"
                "deploy.test.all"
                "deploy.test.role.>"
                "deploy.discover"
              ];
            }
            {
              nkey = pub "listener-prod";
              permissions = listenerPermissions "prodhost" [
                "deploy.prod.prodhost"
                "deploy.prod.all"
                "deploy.prod.role.dns"
                "deploy.discover"
              ];
            }
            {
              # Admin deployer.
              nkey = pub "deployer";
              permissions = {
                publish = [ "deploy.>" ];
                subscribe = [ "deploy.>" ];
              };
            }
            {
              nkey = pub "builder";
              permissions = {
                publish = [ "build.responses.*.builder" ];
                subscribe = [ "build.configs.*" ];
              };
            }
            {
              nkey = pub "build-client";
              permissions = {
                publish = [ "build.configs.*" ];
                subscribe = [ "build.responses.>" ];
              };
            }
          ];
        };
      };

    testhost = listener {
      tier = "test";
      seed = "listener-test";
    };

    prodhost = listener {
      tier = "prod";
      role = "dns";
      seed = "listener-prod";
    };

    builder =
      { pkgs, ... }:
      {
        imports = [ self.nixosModules.default ];
        environment.systemPackages = [
          pkgs.git
          pkgs.curl
        ];
        environment.etc = seeds "homelab-deploy-builder" [ "builder" ] // {
          # The flake the builder builds, committed to git by the test script.
          "homelab-deploy-test/configs".source = pkgs.runCommand "configs" { } ''
            mkdir $out
            cp ${./configs/flake.nix} $out/flake.nix
            cp ${./configs/flake.lock} $out/flake.lock
            printf %s ${pkgs.stdenv.hostPlatform.system} > $out/system
          '';
        };
        services.homelab-deploy.builder = {
          enable = true;
          inherit natsUrl;
          nkeyFile = "/etc/homelab-deploy/builder.seed";
          settings.repos.configs = {
            url = "git+file:///srv/configs";
            default_branch = "master";
          };
          maxParallel = 2;
          metrics.enable = true;
        };
      };
  };

  testScript = ''
    import json

    def cli(args, key):
        return (
            f"homelab-deploy {args} --nats-url ${natsUrl} "
            f"--nkey-file /etc/homelab-deploy/{key}.seed"
        )

    def rebuild_calls(machine):
        return machine.succeed("cat /run/nixos-rebuild-calls 2>/dev/null || true").splitlines()

    start_all()

    server.wait_for_unit("nats.service")
    server.wait_for_open_port(${toString natsPort})

    with subtest("builder repository"):
        builder.succeed(
            "mkdir -p /srv/configs",
            "cp -L /etc/homelab-deploy-test/configs/* /srv/configs/",
            "chmod -R u+w /srv/configs",
            "git -C /srv/configs init -b master",
            "git -C /srv/configs add .",
            "git -C /srv/configs -c user.name=test -c user.email=test@example.invalid commit -m init",
            "chown -R homelab-deploy-builder: /srv/configs",
        )

    with subtest("units come up with the module's settings"):
        for m in (testhost, prodhost):
            m.wait_for_unit("homelab-deploy-listener.service")
            m.wait_for_open_port(9972)
            m.succeed("curl -sf http://127.0.0.1:9972/health | grep -qx ok")
            m.succeed("systemctl show -P ExecStart homelab-deploy-listener | grep -q -- '--watch-unit-file'")
        builder.wait_for_unit("homelab-deploy-builder.service")
        builder.wait_for_open_port(9973)
        builder.succeed("test \"$(systemctl show -P User homelab-deploy-builder)\" = homelab-deploy-builder")
        # metrics.openFirewall on the listeners, not on the builder
        server.succeed("curl -sf http://testhost:9972/metrics | grep -q homelab_deploy_info")
        server.fail("curl -sf --max-time 3 http://builder:9973/metrics")

    with subtest("list-hosts finds both listeners"):
        server.wait_until_succeeds(
            cli("list-hosts", "deployer") + " > /tmp/hosts && grep -q testhost /tmp/hosts && grep -q prodhost /tmp/hosts",
            timeout=60,
        )

    with subtest("deploy to the test tier reaches only the test host"):
        server.succeed(cli("deploy deploy.test.all", "deployer") + " --branch master --action test")
        calls = rebuild_calls(testhost)
        assert len(calls) == 1, calls
        assert calls[0].split()[0] == "test", calls
        assert "--flake" in calls[0] and "#testhost" in calls[0], calls
        assert rebuild_calls(prodhost) == [], rebuild_calls(prodhost)
        # nothing of the listener changed: it keeps running
        testhost.succeed("test \"$(systemctl show -P NRestarts homelab-deploy-listener)\" = 0")

    with subtest("role targeting in the prod tier"):
        server.succeed(cli("deploy deploy.prod.role.dns", "deployer") + " --branch master --action dry-activate")
        calls = rebuild_calls(prodhost)
        assert len(calls) == 1 and calls[0].split()[0] == "dry-activate", calls

    with subtest("a bad revision is refused and nothing runs"):
        server.fail(cli("deploy deploy.test.testhost", "deployer") + " --branch ../../etc --action switch")
        assert len(rebuild_calls(testhost)) == 1, rebuild_calls(testhost)

    with subtest("a switch that changes the listener's unit restarts it"):
        testhost.succeed("touch /run/simulate-unit-change")
        server.succeed(cli("deploy deploy.test.testhost", "deployer") + " --branch master --action switch")
        testhost.wait_until_succeeds(
            "test \"$(systemctl show -P NRestarts homelab-deploy-listener)\" = 1", timeout=60
        )
        testhost.wait_for_unit("homelab-deploy-listener.service")
        server.wait_until_succeeds(cli("list-hosts", "deployer") + " | grep -q testhost", timeout=60)

    with subtest("builder builds every host of the repository"):
        out = server.succeed(cli("build configs --all", "build-client") + " --json")
        result = json.loads(out)
        assert result["status"] == "completed", result
        assert result["succeeded"] == 2 and result["failed"] == 0, result
        assert sorted(r["host"] for r in result["results"]) == ["web1", "web2"], result

    with subtest("builder builds one host"):
        result = json.loads(server.succeed(cli("build configs web1", "build-client") + " --json"))
        assert result["succeeded"] == 1 and result["failed"] == 0, result
        builder.succeed("curl -sf http://127.0.0.1:9973/metrics | grep -q homelab_deploy_builds_total")
  '';
}
