# Install layout (cmake --install build [--prefix P], DESTDIR honoured): programs, helpers in a
# libexec directory bulkheadd finds relative to itself, the plugin SDK, configuration, systemd units.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(BULKHEAD_INSTALL_LIBEXECDIR "${CMAKE_INSTALL_LIBEXECDIR}/bulkhead" CACHE STRING
  "Where bulkhead-vminit, bulkhead-pluginhost and bulkhead-unpack go (relative to the prefix)")
set(BULKHEAD_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING "systemd system units (relative to the prefix)")
set(BULKHEAD_TMPFILESDIR "lib/tmpfiles.d" CACHE STRING "tmpfiles.d entries (relative to the prefix)")
set(BULKHEAD_BASH_COMPLETIONDIR "${CMAKE_INSTALL_DATADIR}/bash-completion/completions" CACHE STRING
  "bash completions (relative to the prefix)")

# bulkheadd looks for its helpers beside itself (the build tree), then at this path relative to
# its own directory: both sides are relative to the prefix, so a tree moved elsewhere still works.
file(RELATIVE_PATH BULKHEAD_HELPER_RELDIR "/prefix/${CMAKE_INSTALL_SBINDIR}"
  "/prefix/${BULKHEAD_INSTALL_LIBEXECDIR}")
target_compile_definitions(bulkheadd PRIVATE BULKHEAD_HELPER_RELDIR="${BULKHEAD_HELPER_RELDIR}")
# The CLI runs one helper too (bulkhead-unpack --pack-tree, for register --rootfs), found the same
# way from the directory of programs.
file(RELATIVE_PATH BULKHEAD_CLI_HELPER_RELDIR "/prefix/${CMAKE_INSTALL_BINDIR}"
  "/prefix/${BULKHEAD_INSTALL_LIBEXECDIR}")
target_compile_definitions(bulkhead PRIVATE BULKHEAD_CLI_HELPER_RELDIR="${BULKHEAD_CLI_HELPER_RELDIR}")

install(TARGETS bulkhead RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT bulkhead)
install(TARGETS bulkheadd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT bulkhead)
install(TARGETS bulkhead-vminit bulkhead-pluginhost bulkhead-unpack
  RUNTIME DESTINATION ${BULKHEAD_INSTALL_LIBEXECDIR} COMPONENT bulkhead)

# Configuration: a commented default bulkhead.toml (a conffile in the package), empty plugins.d/
# and trusted-keys/. Under the prefix (relocatable), except for the /usr prefix, whose
# configuration GNUInstallDirs puts in /etc.
if(CMAKE_INSTALL_FULL_SYSCONFDIR STREQUAL "${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SYSCONFDIR}")
  set(BULKHEAD_CONFDIR "${CMAKE_INSTALL_SYSCONFDIR}/bulkhead")
else()
  set(BULKHEAD_CONFDIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/bulkhead")
endif()
install(FILES dist/bulkhead.toml DESTINATION ${BULKHEAD_CONFDIR} COMPONENT bulkhead)
install(DIRECTORY DESTINATION ${BULKHEAD_CONFDIR}/plugins.d COMPONENT bulkhead)
install(DIRECTORY DESTINATION ${BULKHEAD_CONFDIR}/trusted-keys COMPONENT bulkhead)

# systemd: the service, its socket and the tmpfiles.d entry, with this prefix's paths.
set(BULKHEAD_SBINDIR_FULL "${CMAKE_INSTALL_FULL_SBINDIR}")
set(BULKHEAD_CONFDIR_FULL "${CMAKE_INSTALL_FULL_SYSCONFDIR}/bulkhead")
foreach(unit bulkhead.service bulkhead.socket)
  configure_file(dist/systemd/${unit}.in ${CMAKE_BINARY_DIR}/dist/${unit} @ONLY)
  install(FILES ${CMAKE_BINARY_DIR}/dist/${unit} DESTINATION ${BULKHEAD_SYSTEMD_UNITDIR} COMPONENT bulkhead)
endforeach()
install(FILES dist/systemd/bulkhead-tmpfiles.conf DESTINATION ${BULKHEAD_TMPFILESDIR}
  RENAME bulkhead.conf COMPONENT bulkhead)

# The plugin SDK: the public header, a pkg-config file and a CMake package (BulkheadPlugin), both
# relocatable (the .pc file's prefix is ${pcfiledir}/../.., the CMake package's its own location),
# both in share/: the SDK is a header only, the same for every architecture.
install(FILES include/bulkhead/plugin_api.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/bulkhead COMPONENT bulkhead-dev)
file(RELATIVE_PATH BULKHEAD_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_DATADIR}/pkgconfig" "/prefix")
configure_file(cmake/bulkhead-plugin.pc.in ${CMAKE_BINARY_DIR}/dist/bulkhead-plugin.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/dist/bulkhead-plugin.pc DESTINATION ${CMAKE_INSTALL_DATADIR}/pkgconfig
  COMPONENT bulkhead-dev)
set(BULKHEAD_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/BulkheadPlugin")
configure_package_config_file(cmake/BulkheadPluginConfig.cmake.in
  ${CMAKE_BINARY_DIR}/dist/BulkheadPluginConfig.cmake
  INSTALL_DESTINATION ${BULKHEAD_CMAKEDIR} PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/dist/BulkheadPluginConfigVersion.cmake
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_BINARY_DIR}/dist/BulkheadPluginConfig.cmake
  ${CMAKE_BINARY_DIR}/dist/BulkheadPluginConfigVersion.cmake
  DESTINATION ${BULKHEAD_CMAKEDIR} COMPONENT bulkhead-dev)
install(FILES examples/plugins/folder-share.c
  DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/bulkhead-dev/examples COMPONENT bulkhead-dev)

# Man pages from their one Markdown source (docs/man/*.md, go-md2man), gzipped as Debian wants.
find_program(BULKHEAD_GO_MD2MAN go-md2man)
if(BULKHEAD_GO_MD2MAN)
  foreach(page bulkhead.1 bulkheadd.8 bulkhead.toml.5 bulkhead-plugin.7)
    string(REGEX MATCH "[0-9]$" section ${page})
    set(out ${CMAKE_BINARY_DIR}/man/${page}.gz)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND ${BULKHEAD_GO_MD2MAN} -in ${PROJECT_SOURCE_DIR}/docs/man/${page}.md -out ${CMAKE_BINARY_DIR}/man/${page}
      COMMAND gzip -9nf ${CMAKE_BINARY_DIR}/man/${page}
      DEPENDS ${PROJECT_SOURCE_DIR}/docs/man/${page}.md VERBATIM)
    list(APPEND bulkhead_man_pages ${out})
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT bulkhead)
  endforeach()
  add_custom_target(man-pages ALL DEPENDS ${bulkhead_man_pages})
else()
  message(STATUS "go-md2man not found: man pages are neither built nor installed (scripts/install-deps.sh installs it)")
endif()
install(FILES dist/bash-completion/bulkhead DESTINATION ${BULKHEAD_BASH_COMPLETIONDIR} COMPONENT bulkhead)
